"""One builder per tab: `build_<tab>_tab(service, ...)` lays out components and wires their events."""
