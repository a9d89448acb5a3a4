"""The blinded expert study, the labelling mode, the study report and the live session view."""
