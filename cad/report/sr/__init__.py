"""The Mammography CAD SR (TID 4000): builder, content items, SOP class and reader."""
