"""What comes in: tensors and their task, readers of the user's files, model sources, the
sample registry and architectures, safe weight loading and the training loop."""
