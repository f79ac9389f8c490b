"""The locked CAD core: per-view RetinaNet detection, CC/MLO linking, findings."""
