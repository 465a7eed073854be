"""The Event Plane: change streams and consumer groups, fed by committed WAL records."""
