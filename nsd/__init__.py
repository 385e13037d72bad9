"""Where the data sets live on disk: the Algonauts 2023 challenge layout (folders, file names, ids, ROI classes),
defined once for the feature store, the encoders and the demo data."""
