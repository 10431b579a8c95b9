"""Pure helpers behind the stages: media I/O, shot boundaries, blur and motion scores."""
