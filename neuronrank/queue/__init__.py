"""What runs and who runs it: the run kinds (kinds.py: from a request to a result; it loads the torch rooms)
and the queue with its dispatcher and worker processes (jobs.py, no torch)."""
