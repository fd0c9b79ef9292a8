"""The Ansible stdout callback plugin the provision module runs ``ansible-playbook`` with.

This folder is put on ``ANSIBLE_CALLBACK_PLUGINS``; it is loaded by Ansible, never imported
by CloudiSENSE itself.
"""
