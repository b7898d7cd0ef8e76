"""GPU facts shared by the exporter and the launcher: which cards, in what order, who
holds memory."""
