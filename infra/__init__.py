"""The Pulumi program: what gets deployed. Never imports the tool (backbone/)."""
