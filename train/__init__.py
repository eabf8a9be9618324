"""The training program: `python -m train` on the SageMaker training contract (see DESIGN.md)."""
