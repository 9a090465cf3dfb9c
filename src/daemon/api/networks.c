/* /1.0/networks: ferry manages no networks (containers have only loopback), but clients list them. */
#include "api.h"

FerryResponse *api_networks_get(FerryRequest *request)
{
    return ferry_response_sync(json_array());
}
