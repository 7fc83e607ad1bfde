"""The built-in capture simulator: synthetic faces under controlled pose and illumination."""
