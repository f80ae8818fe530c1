from django.conf import settings
from django.db import models


class Message(models.Model):
    room = models.SlugField(max_length=50, db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField()
    sent = models.DateTimeField(auto_now_add=True)

    def as_json(self) -> dict:
        return {"user": self.author.get_username(), "text": self.text, "sent": self.sent.isoformat()}
