"""The reconciler: passes that poll upstream for tasks whose result is missing."""
