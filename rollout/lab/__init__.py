"""A local stand-in for the platform: demo app, local app-deploy, fleet and load generator."""
