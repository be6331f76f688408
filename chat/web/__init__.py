"""The live chat in a browser: the embeddable guest widget, the staff inbox page, the demo page.

Pages and static files only: every read and write goes through the guest API
(chat.api.guest), so there is no second way to write a message.
"""
