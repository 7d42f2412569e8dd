"""exaprov: provisions the AWS infrastructure of an ExaDeploy system and keeps it converged."""

__version__ = "0.1.0"
