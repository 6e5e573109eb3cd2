"""networking-romana: Neutron's ML2 mechanism driver and IPAM driver for Romana."""
