"""What a run leaves behind: results folders, environment.json, JUnit/TAP, the evidence report."""
