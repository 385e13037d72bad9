"""Extract vision-backbone activations once into chunked Zarr stores indexed by NSD id."""
