from django.urls import path

from chat.web import views

app_name = "chat_web"

urlpatterns = [
    path("inbox/", views.inbox, name="inbox"),
    path("demo/", views.demo, name="demo"),
]
