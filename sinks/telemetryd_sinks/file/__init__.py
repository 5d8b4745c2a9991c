"""The file sink: records appended as JSON Lines, rotated by size, optionally gzipped."""
