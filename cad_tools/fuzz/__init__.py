"""Coverage-guided fuzzing of what users feed the device and its tools (`make fuzz`, atheris)."""
