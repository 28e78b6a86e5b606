"""Offline commands: dataset conversion, benchmarks, plots, inspection."""
