"""Procedures the CLI and the app share: the workbench, the tab's Workspace, sensitivity,
allocation, schedules, fine-tuning, techniques and benchmarks."""
