"""cnm: Docker's Container Network Model, rebuilt as a small Python stack."""
