"""Task modules that the tests run in real `tasker worker` processes."""
