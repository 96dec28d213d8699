"""DataModules: images in [-1, 1] as (N, C, H, W), labels where they exist (-1 where not)."""
