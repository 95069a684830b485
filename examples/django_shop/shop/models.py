from django.db import models


class Order(models.Model):
    email = models.EmailField()
    sku = models.CharField(max_length=40)
    quantity = models.PositiveIntegerField()
    amount = models.PositiveIntegerField(help_text="Total in cents.")
    currency = models.CharField(max_length=3)
    created = models.DateTimeField(auto_now_add=True)
