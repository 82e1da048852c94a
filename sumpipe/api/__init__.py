"""The realtime summarization API (its own Lambda function, and `sumpipe serve`)."""
