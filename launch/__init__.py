"""Launchers beside the library: submitit sweeps (launch/sweep.py) and the run-folder lock the Slurm scripts share."""
