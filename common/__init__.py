"""What every stage shares: the feature and signature names, safe output writing, entry-point errors."""
