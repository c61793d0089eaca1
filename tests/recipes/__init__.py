"""Tests of the Hydra recipes (conf/ and recipes/)."""
