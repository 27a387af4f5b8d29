"""Config building blocks: the sections every experiment shares
(experiment.py), the shipped generators' sections (shipped.py) and the
embedded default experiment (default.py). The experiment files themselves
live in the repository's configs/ folder."""
