"""The file sink: JSON lines, rotated by size or time, gzipped in a thread of its own."""
