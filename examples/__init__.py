"""Models this project did not design, trained by short scripts and registered with
``python -m modelstore register`` (see README, "Bring your own model")."""
