"""The prior registry (``registry.json``) and the small priors genprior trains and ships, with
the scripts that trained and checked them. Installed as ``genprior.pretrained`` so that a
wheel carries them; ``genprior.priors.load.pretrained_dir`` finds this folder."""
