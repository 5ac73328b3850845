"""What runs on each host: the cloud-config user data and the files it installs."""
