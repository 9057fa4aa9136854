"""Tests of medmm.knowledge (a package so module names stay unique across tests/)."""
