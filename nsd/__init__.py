"""Where the data sets live on disk and how to read them: the Algonauts 2023 challenge layout (folders, file names,
ids, ROI classes; `nsd.layout`, imports nothing heavy) and the raw NSD release (`nsd.tree` paths, `nsd.expdesign`,
`nsd.betas`, `nsd.labels`, `nsd.split`, `nsd.noise_ceiling`, `nsd.subject.load_nsd_subject`, `nsd.prepare`)."""
