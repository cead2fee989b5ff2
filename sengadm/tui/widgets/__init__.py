"""The dashboard's widgets: things shown on its screens."""
