"""Handlers for trapped system calls, one module per family (files, processes)."""
