"""The node that joins the layers: lifecycle, accepting and dialling, the control
socket, and assembly from a project."""
