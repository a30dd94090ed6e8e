"""The consume → batch → write → commit loop."""
