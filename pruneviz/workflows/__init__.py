"""Procedures the CLI and the app share: the workbench, the tab's Workspace, sensitivity,
allocation, schedules, fine-tuning, techniques and benchmarks; and the long jobs' bodies,
their child processes and the server's queue of them."""
