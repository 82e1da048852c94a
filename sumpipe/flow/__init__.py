"""The pipeline functions' flow (trigger, worker, stop_ec2): what runs in their Lambda zips."""
