"""Generated from protos/scoring/v1 by `make protos`. Do not edit."""
