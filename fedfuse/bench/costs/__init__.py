"""What a cell costs: bytes counted from Flower messages, FLOPs from torch's counter, and simulated latency and energy from a hardware profile's stated formulas."""
