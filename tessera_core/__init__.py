"""The small shared core every package may import: errors, configuration knobs, types, hardware."""
