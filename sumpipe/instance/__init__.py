"""What runs on the worker instances: the job runner."""
