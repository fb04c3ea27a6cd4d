"""Experiments beside the pipeline: the evaluation protocol on a file (``evaluate_file``), the replay of
periodic updates (``simulate``) and switch-following on planted switches (``switch_follow``)."""
