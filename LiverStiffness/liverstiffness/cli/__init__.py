"""The command line (front end): ``main.py`` holds the command table and how a run ends;
``options.py`` the option groups commands share; one module per command. Nothing below this
package parses arguments."""
