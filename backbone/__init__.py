"""backbone: plan, price, check and review the kit's Pulumi stacks offline."""

__version__ = "0.1.0"
