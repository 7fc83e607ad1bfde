"""Annotation with Label Studio: the local server, pushing tasks, pulling exports."""
