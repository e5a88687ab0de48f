# Runs in the setup guest (sh -e): the pool dpool on /dev/vda with the zvol dpool/persistence
# holding ext4 labelled $LABEL (default persistence), filled from /payload/volume.
LABEL=${LABEL:-persistence}
zpool create -f -o cachefile=none dpool /dev/vda
zfs create -V 256M dpool/persistence
i=0
while [ ! -e /dev/zvol/dpool/persistence ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkfs.ext4 -q -L "$LABEL" /dev/zvol/dpool/persistence
mkdir -p /mnt/vol
mount /dev/zvol/dpool/persistence /mnt/vol
if [ -d /payload/volume ]; then
    cp -a /payload/volume/. /mnt/vol/
fi
ls -la /mnt/vol
umount /mnt/vol
zpool export dpool
