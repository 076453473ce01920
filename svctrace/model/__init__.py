"""The values everything else shares: packets, cluster objects, snapshots, versions."""
